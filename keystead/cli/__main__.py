from keystead.cli import main

main()
