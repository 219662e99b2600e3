from slimzoo.cli import main

main()
