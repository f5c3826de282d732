"""Scale-out on Ray: the only package that imports Ray (Serve replicas, Train workers, Tune
trials). Nothing imports it unless a Ray address is set; embedded mode never loads Ray."""
