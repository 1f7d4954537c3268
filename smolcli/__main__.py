from smolcli.cli.app import main

main()
