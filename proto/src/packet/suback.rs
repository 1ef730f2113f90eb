//! TODO(codec): suback
