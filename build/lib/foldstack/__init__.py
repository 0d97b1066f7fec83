"""foldstack: k-fold text-classification competition pipeline (prep -> folds -> train -> gather -> submit)."""
__version__ = "0.1.0"
