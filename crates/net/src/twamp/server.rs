//! TWAMP server driver (being written).
