//! TODO(codec): ping
