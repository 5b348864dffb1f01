from keystead.cli import main

if __name__ == "__main__":  # guarded: rewrap lanes start with multiprocessing's spawn
    main()
