from cinelora.cli import main

main()
