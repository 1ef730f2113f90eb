//! TODO(codec): connack
