"""``python -m robustbench_rpc`` runs the command-line interface."""

from robustbench_rpc.cli.app import main

if __name__ == "__main__":
    main()
