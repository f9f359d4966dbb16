"""``python -m cnnlens ...`` (and ``torchrun --nproc-per-node N -m cnnlens evaluate ...``): the command line."""
from cnnlens.cli import main

if __name__ == "__main__":
    main(prog_name="cnnlens")
