//! TODO(codec): unsubscribe
