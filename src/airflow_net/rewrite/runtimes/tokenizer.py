"""The tokenizer files an exported runtime carries, and loading them without transformers.

Exported runtimes (ONNX Runtime, CTranslate2) tokenize with the ``tokenizers`` library on the
``tokenizer.json`` that transformers' ``T5Tokenizer`` writes: the same ids as ``T5Tokenizer`` (its backend
in transformers 5), with ``</s>`` appended by the post-processor, and no torch or transformers import at load.
"""

from __future__ import annotations

import shutil
from pathlib import Path


def save_tokenizer(hf_folder: str, out_dir: str) -> None:
    """Write the Hugging Face folder's tokenizer (tokenizer.json and config, plus spiece.model) into ``out_dir``."""
    from transformers import T5Tokenizer

    T5Tokenizer.from_pretrained(hf_folder).save_pretrained(out_dir)
    spiece = Path(hf_folder) / "spiece.model"
    if spiece.is_file():
        # Not needed by these runtimes, but the folder stays a complete tokenizer for any other reader.
        shutil.copyfile(spiece, Path(out_dir) / "spiece.model")


def load_tokenizer(folder: str):
    """The ``tokenizers.Tokenizer`` of an exported folder; ValueError (one line) if it has none."""
    from tokenizers import Tokenizer

    path = Path(folder) / "tokenizer.json"
    if not path.is_file():
        raise ValueError(f"{folder}: expected the exported tokenizer.json (run the runtime's export first)")
    return Tokenizer.from_file(str(path))
