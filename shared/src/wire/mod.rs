//! The only serializable types: versioned, length-prefixed frames with bounded decoding.
