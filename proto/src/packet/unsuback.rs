//! TODO(codec): unsuback
