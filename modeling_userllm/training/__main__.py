"""`python -m modeling_userllm.training [--preset FILE] [--KEY VALUE ...]`: one training run (`pipeline.main`)."""

from .pipeline import main

main()
