from vcat.cli import main

main()
