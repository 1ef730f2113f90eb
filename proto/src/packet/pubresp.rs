//! TODO(codec): pubresp
