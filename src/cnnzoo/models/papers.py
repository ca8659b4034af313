"""The publications behind the registered networks, each cited once (year: its first public version)."""

from cnnzoo.registry import Paper

LECUN_1998 = Paper(
    authors="Yann LeCun, Léon Bottou, Yoshua Bengio, Patrick Haffner",
    title="Gradient-Based Learning Applied to Document Recognition",
    venue="Proceedings of the IEEE 86(11)",
    year=1998,
    url="http://yann.lecun.com/exdb/publis/pdf/lecun-98.pdf",
)
KRIZHEVSKY_2012 = Paper(
    authors="Alex Krizhevsky, Ilya Sutskever, Geoffrey E. Hinton",
    title="ImageNet Classification with Deep Convolutional Neural Networks",
    venue="NIPS 2012",
    year=2012,
    url="https://papers.nips.cc/paper/4824-imagenet-classification-with-deep-convolutional-neural-networks",
)
KRIZHEVSKY_2014 = Paper(
    authors="Alex Krizhevsky",
    title="One weird trick for parallelizing convolutional neural networks",
    venue="arXiv preprint 2014",
    year=2014,
    url="https://arxiv.org/abs/1404.5997",
    arxiv="1404.5997",
)
ZEILER_2013 = Paper(
    authors="Matthew D. Zeiler, Rob Fergus",
    title="Visualizing and Understanding Convolutional Networks",
    venue="ECCV 2014",
    year=2013,
    url="https://arxiv.org/abs/1311.2901",
    arxiv="1311.2901",
)
SIMONYAN_2014 = Paper(
    authors="Karen Simonyan, Andrew Zisserman",
    title="Very Deep Convolutional Networks for Large-Scale Image Recognition",
    venue="ICLR 2015",
    year=2014,
    url="https://arxiv.org/abs/1409.1556",
    arxiv="1409.1556",
)
LIN_2013 = Paper(
    authors="Min Lin, Qiang Chen, Shuicheng Yan",
    title="Network In Network",
    venue="ICLR 2014",
    year=2013,
    url="https://arxiv.org/abs/1312.4400",
    arxiv="1312.4400",
)
SZEGEDY_2014 = Paper(
    authors="Christian Szegedy, Wei Liu, Yangqing Jia, Pierre Sermanet, Scott Reed, Dragomir Anguelov, "
            "Dumitru Erhan, Vincent Vanhoucke, Andrew Rabinovich",
    title="Going Deeper with Convolutions",
    venue="CVPR 2015",
    year=2014,
    url="https://arxiv.org/abs/1409.4842",
    arxiv="1409.4842",
)
SZEGEDY_2016 = Paper(
    authors="Christian Szegedy, Sergey Ioffe, Vincent Vanhoucke, Alex Alemi",
    title="Inception-v4, Inception-ResNet and the Impact of Residual Connections on Learning",
    venue="AAAI 2017",
    year=2016,
    url="https://arxiv.org/abs/1602.07261",
    arxiv="1602.07261",
)
IANDOLA_2016 = Paper(
    authors="Forrest N. Iandola, Song Han, Matthew W. Moskewicz, Khalid Ashraf, William J. Dally, Kurt Keutzer",
    title="SqueezeNet: AlexNet-level accuracy with 50x fewer parameters and <0.5MB model size",
    venue="arXiv preprint 2016",
    year=2016,
    url="https://arxiv.org/abs/1602.07360",
    arxiv="1602.07360",
)
HE_2015 = Paper(
    authors="Kaiming He, Xiangyu Zhang, Shaoqing Ren, Jian Sun",
    title="Deep Residual Learning for Image Recognition",
    venue="CVPR 2016",
    year=2015,
    url="https://arxiv.org/abs/1512.03385",
    arxiv="1512.03385",
)
HE_2016 = Paper(
    authors="Kaiming He, Xiangyu Zhang, Shaoqing Ren, Jian Sun",
    title="Identity Mappings in Deep Residual Networks",
    venue="ECCV 2016",
    year=2016,
    url="https://arxiv.org/abs/1603.05027",
    arxiv="1603.05027",
)
ZAGORUYKO_2016 = Paper(
    authors="Sergey Zagoruyko, Nikos Komodakis",
    title="Wide Residual Networks",
    venue="BMVC 2016",
    year=2016,
    url="https://arxiv.org/abs/1605.07146",
    arxiv="1605.07146",
)
XIE_2016 = Paper(
    authors="Saining Xie, Ross Girshick, Piotr Dollár, Zhuowen Tu, Kaiming He",
    title="Aggregated Residual Transformations for Deep Neural Networks",
    venue="CVPR 2017",
    year=2016,
    url="https://arxiv.org/abs/1611.05431",
    arxiv="1611.05431",
)
HUANG_2016 = Paper(
    authors="Gao Huang, Yu Sun, Zhuang Liu, Daniel Sedra, Kilian Q. Weinberger",
    title="Deep Networks with Stochastic Depth",
    venue="ECCV 2016",
    year=2016,
    url="https://arxiv.org/abs/1603.09382",
    arxiv="1603.09382",
)
HUANG_2017 = Paper(
    authors="Gao Huang, Zhuang Liu, Laurens van der Maaten, Kilian Q. Weinberger",
    title="Densely Connected Convolutional Networks",
    venue="CVPR 2017",
    year=2016,
    url="https://arxiv.org/abs/1608.06993",
    arxiv="1608.06993",
)
LARSSON_2016 = Paper(
    authors="Gustav Larsson, Michael Maire, Gregory Shakhnarovich",
    title="FractalNet: Ultra-Deep Neural Networks without Residuals",
    venue="ICLR 2017",
    year=2016,
    url="https://arxiv.org/abs/1605.07648",
    arxiv="1605.07648",
)
