"""What ``pulumi up`` / ``pulumi preview`` run (Pulumi.yaml: ``main: stacks/``)."""

from keystead.stacks.program import main

main()
