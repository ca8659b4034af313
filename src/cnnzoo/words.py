"""Small helpers for the words cnnzoo prints (shared by the CLI and the library's console messages)."""

__all__ = ["plural"]


def plural(count: int, word: str, words: str | None = None) -> str:
    """"1 epoch", "30 epochs", "1,442 images": a count with its noun in agreement."""
    return f"{count:,} {word if count == 1 else words or word + 's'}"
