"""Scorers shipped with the toolkit (installed as `tts.scorers`): LLM judge, reward models, confidence
measures and the code verifiers as scorers. Each registers under the `tts.scorers` entry-point group."""
