"""One dataset: the walker, the actions, dates, UIDs, tokens, identity and the engine."""
