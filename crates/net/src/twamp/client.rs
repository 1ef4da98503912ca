//! TWAMP client driver (being written).
