"""The context layer: learned items (memories, playbook bullets, skills, notes) and their assembly."""
