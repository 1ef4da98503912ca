//! TWAMP reflector (being written).
