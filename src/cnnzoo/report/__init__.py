"""Pictures and pages: diagrams drawn from the profiler's trace, and the static site (`cnnzoo report`)."""
