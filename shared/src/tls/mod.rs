//! rustls mutual-TLS configurations built from PEM bytes.
