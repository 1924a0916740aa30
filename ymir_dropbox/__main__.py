from ymir_dropbox.running.cli import main

raise SystemExit(main())
