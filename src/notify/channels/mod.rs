//! One file per channel, each implementing [`super::Channel`] with its own rendering and classification.

pub mod email;
