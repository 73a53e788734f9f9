from gpfm.cli import main

main()
