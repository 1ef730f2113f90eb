//! TODO(codec): auth
