//! TODO(codec): publish
