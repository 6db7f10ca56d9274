from spendlake.cli import main

raise SystemExit(main())
