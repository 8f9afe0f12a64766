"""A tiny, randomly initialised Llama with a word-level tokenizer, built locally (no download).

For tests that need a real transformers/vLLM model directory but where the packaged SmolLM2
GGUF is not at hand (the GPU machine) or its size does not matter (tokenizer masking).
"""

from __future__ import annotations

import re
from pathlib import Path

from prelabel.train.models import CHATML_TEMPLATE

SPECIALS = ["<unk>", "<pad>", "<|im_start|>", "<|im_end|>"]


def build_tiny_model(directory: Path, texts: list[str], *, hidden_size: int = 256, layers: int = 2) -> Path:
    """Save a Llama (head_dim 64, as vLLM's kernels expect) and a tokenizer covering ``texts``."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = sorted({w for text in texts for w in re.findall(r"\w+|[^\w\s]", text)} | {"user", "assistant", "system"})
    vocab = {token: i for i, token in enumerate(SPECIALS + words)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.decoder = decoders.WordPiece(prefix="##")  # joins word tokens with spaces
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>", eos_token="<|im_end|>",
        bos_token="<|im_start|>", additional_special_tokens=["<|im_start|>"],
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(vocab), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=layers, num_attention_heads=hidden_size // 64, num_key_value_heads=hidden_size // 64,
        max_position_embeddings=512, bos_token_id=vocab["<|im_start|>"], eos_token_id=vocab["<|im_end|>"],
        pad_token_id=vocab["<pad>"], tie_word_embeddings=False,
    )
    directory.mkdir(parents=True, exist_ok=True)
    LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
