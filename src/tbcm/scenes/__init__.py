"""The scenes miniature: procedurally generated compositional scenes (:mod:`.generator`), a judge
that reads their attributes (:mod:`.judge`), and scenes evaluation on seen and held-out prompts
(:mod:`.evaluate`)."""
