"""sae_course: the helper library behind the SAE course notebooks.

One module per idea; the notebooks import from here and the exercise checks in
`sae_course.checks` compare a learner's code with the reference implementations here.
"""

__version__ = "0.1.0"
