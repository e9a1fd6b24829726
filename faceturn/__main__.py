from faceturn.cli import main

raise SystemExit(main())
