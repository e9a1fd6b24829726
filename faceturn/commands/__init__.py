"""One module per `faceturn` subcommand (see faceturn.cli)."""
