"""The pinned classifier and the IS / FID / KID / mode-coverage scores built on it."""
