//! TWAMP client (being written).
