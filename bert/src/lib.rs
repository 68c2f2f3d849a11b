//! BERT on the engine. Today: the encoder layer (HF `BertLayer`) on the autograd tape; the full
//! model, heads, checkpoints, data and training arrive with their issues.

pub mod layer;
