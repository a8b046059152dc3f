"""Plans, phases and micro-tasks, their dependencies, and the memory-aware workflow."""
