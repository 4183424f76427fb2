"""asr: DeepSpeech2-style CTC speech recognition in PyTorch."""

__version__ = "0.1.0"
