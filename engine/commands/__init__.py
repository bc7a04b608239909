"""One module per `septet` subcommand: add_arguments(parser) and run(args, parser) -> exit code."""
