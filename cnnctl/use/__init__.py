"""A trained run and the commands built on it: evaluate, predict, explain, visualize, report, export."""
