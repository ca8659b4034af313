"""One module per paper; importing a module registers its networks."""

from cnnzoo.models import alexnet, lenet, nin, vgg, zfnet  # noqa: F401
