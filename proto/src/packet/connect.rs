//! TODO(codec): connect
