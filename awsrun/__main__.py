from awsrun.cli import main

main()
