//! TWAMP server (being written).
