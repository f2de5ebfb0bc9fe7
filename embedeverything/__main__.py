from embedeverything.cli import main

main()
