"""Export of human-verified Label Studio tasks into training and evaluation datasets."""
