//! TODO(codec): subscribe
