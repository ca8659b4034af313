"""One module per paper; importing a module registers its networks."""

from cnnzoo.models import (  # noqa: F401
    alexnet,
    densenet,
    fractalnet,
    googlenet,
    inception_v4,
    lenet,
    nin,
    preact_resnet,
    resnet,
    resnext,
    squeezenet,
    stochastic_depth,
    vgg,
    wide_resnet,
    zfnet,
)
