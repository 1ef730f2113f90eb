//! TODO(codec): disconnect
