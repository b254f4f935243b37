"""Publishing to the Hugging Face Hub: each stage's output as a dataset with its card, and the fine-tuned model."""
